//! Generates the contract from proto/billing.proto (plt-build: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plt_build::Contract::new("billing")
        .proto("proto/billing.proto")
        .compile()
}
