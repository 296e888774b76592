//! The node protocol over TCP: pipelined, out-of-order completion. Arrives with the node issue.
