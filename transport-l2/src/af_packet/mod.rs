//! The AF_PACKET driver (under construction).
