//! The node protocol over raw Ethernet: a sans-IO engine plus AF_PACKET / AF_XDP drivers. Arrives with the L2 issue.
