//! Streaming multipart uploads for file handles.
