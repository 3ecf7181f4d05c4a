//! The analytics-service binary: `serve` (the default), `migrate`, `config print`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plt_runtime::main::<analytics_service::Analytics>()
}
