//! Generates the contract from proto/notes.proto (plt-build: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plt_build::Contract::new("notes")
        .proto("proto/notes.proto")
        .compile()
}
