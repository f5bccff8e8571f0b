//! The shared HTTP client (being built: see issue 13).
