//! Generates the contract from proto/blog.proto (plt-build: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plt_build::Contract::new("blog")
        .proto("proto/blog.proto")
        .compile()
}
