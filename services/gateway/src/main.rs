//! The api-gateway binary: `serve` (the default) and `config print`, the runtime's.

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plt_runtime::main::<api_gateway::ApiGateway>()
}
