//! Wire formats in, [`crate::signal::Decoded`] out.
