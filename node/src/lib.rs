//! `qbd-node`: serves part files to masters over TCP and L2. Arrives with the node issue.
