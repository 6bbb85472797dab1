//! The one integration-test binary; fixtures are built in code (`it/fixtures.rs`).

mod it;
