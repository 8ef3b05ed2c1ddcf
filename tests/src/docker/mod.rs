//! What the Docker delivery checks (`tests/tests/docker_files.rs`) read the files with: a
//! Dockerfile parser, Compose loading, validation and interpolation, a `.dockerignore`
//! matcher, a health-check runner and the variable lists of SPEC section 3 and `.env.example`.
//! No Docker engine is needed.

pub mod compose;
pub mod dockerfile;
pub mod dockerignore;
pub mod healthcheck;
pub mod spec;
