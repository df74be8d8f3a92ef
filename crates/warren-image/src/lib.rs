//! warren-image
