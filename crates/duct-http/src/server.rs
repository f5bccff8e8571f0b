//! The shared HTTP server (being built: see issue 13).
