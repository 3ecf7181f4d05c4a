//! Test support: the matrix every service's contract suite runs in.

/// Defines, in a service's contract test file, `enum Via` (how the suite reaches the
/// service: its core in-process, its gRPC or HTTP client, or through the [`ClientFactory`]
/// over a protocol, as another service would) and one `#[tokio::test]` per way and
/// backend, each calling `$suite(backend, via)`, an async function of the file with the
/// signature `async fn suite(backend: plt_db::testing::Backend, via: Via)`. The test crate
/// needs `plt_db` and `tokio` (with its `macros` feature).
///
/// [`ClientFactory`]: crate::ClientFactory
#[macro_export]
macro_rules! contract_matrix {
    ($suite:ident) => {
        /// How the suite reaches the service.
        #[derive(Clone, Copy)]
        enum Via {
            Core,
            Grpc,
            Http,
            /// Through the client factory (discovery, balancing, service credentials) over
            /// a protocol: what another service uses.
            Factory($crate::Protocol),
        }

        $crate::contract_matrix!(@test $suite, core_on_sqlite, Sqlite, Via::Core);
        $crate::contract_matrix!(@test $suite, grpc_on_sqlite, Sqlite, Via::Grpc);
        $crate::contract_matrix!(@test $suite, http_on_sqlite, Sqlite, Via::Http);
        $crate::contract_matrix!(@test $suite, core_on_postgres, Postgres, Via::Core);
        $crate::contract_matrix!(@test $suite, grpc_on_postgres, Postgres, Via::Grpc);
        $crate::contract_matrix!(@test $suite, http_on_postgres, Postgres, Via::Http);
        $crate::contract_matrix!(
            @test $suite, factory_grpc_on_sqlite, Sqlite, Via::Factory($crate::Protocol::Grpc)
        );
        $crate::contract_matrix!(
            @test $suite, factory_http_on_sqlite, Sqlite, Via::Factory($crate::Protocol::Http)
        );
    };
    (@test $suite:ident, $name:ident, $backend:ident, $via:expr) => {
        #[tokio::test]
        async fn $name() {
            $suite(::plt_db::testing::Backend::$backend, $via).await;
        }
    };
}
