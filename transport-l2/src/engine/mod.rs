//! The sans-IO L2 protocol engine (under construction).
