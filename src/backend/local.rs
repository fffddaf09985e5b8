//! `local://` backend: the embedded erasure-coded store, in process.
