//! Benchmarks for livechat: see `benches/core.rs`. The end-to-end load generator
//! comes with the performance work.
