//! Extensions: `health_check`, `zpages` and `file_storage`.

pub mod file_storage;
pub mod health_check;
pub mod zpages;

pub use health_check::HealthCheckConfig;
pub use zpages::ZpagesConfig;
