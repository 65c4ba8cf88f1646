//! Black-box test harness for Mamba: boots the real panel and Wings on loopback ports with real
//! certificates. The integration tests live in `tests/it/`.
#![forbid(unsafe_code)]
