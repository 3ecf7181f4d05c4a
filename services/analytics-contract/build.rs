//! Generates the contract from proto/analytics.proto (plt-build: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plt_build::Contract::new("analytics")
        .proto("proto/analytics.proto")
        .compile()
}
