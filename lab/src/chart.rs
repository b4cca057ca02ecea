//! Charts (not yet).
