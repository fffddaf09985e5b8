//! The embedded erasure-coded object store (see issue "Embedded erasure-coded object store").
