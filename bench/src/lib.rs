//! `qbd-bench`: transport and end-to-end benchmarks. Arrives with the transport issue.
