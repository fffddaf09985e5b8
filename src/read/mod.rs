//! Read-ahead for file handles.
