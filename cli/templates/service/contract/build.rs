//! Generates the contract from proto/__name__.proto (plt-build: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plt_build::Contract::new("__name__")
        .proto("proto/__name__.proto")
        .compile()
}
