//! Extensions: `health_check`, `zpages`, `file_storage` and `bearertokenauth`.

pub mod bearer_token_auth;
pub mod file_storage;
pub mod health_check;
pub mod zpages;

pub use health_check::HealthCheckConfig;
pub use zpages::ZpagesConfig;
