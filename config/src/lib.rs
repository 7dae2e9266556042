//! lbd's configuration: the file format ([`file`]), the validated model
//! ([`model`]), the checks between them ([`validate`]) and loading a file
//! ([`load`]). A crate of its own so that the control plane (lb-agent)
//! can build and check configs without compiling lbd's data plane.
//!
//! Modules depend on each other in one direction only (no cycles):
//!
//! * `model`: on `check_program` (the settings of `external` and
//!   `tcp_script` checks), which uses `regex` only;
//! * `file` → `model` (rendering a typed config back into a file);
//! * `tls_files` → `model`; `tls_client` → `tls_files`, `model`;
//! * `validate` → `file`, `model`; inside it, `mod` → `global`, `admin`,
//!   `listener`, `pool`, `xdp`; `pool` → `health`; each of them →
//!   `fields` (which uses std only); `admin` → `tls_files`, `health` →
//!   `tls_client`, `program` (→ `check_program`);
//! * `load` → `validate`, `file`, `model`;
//! * `haproxy` (reading haproxy.cfg) → `file`, `model`, `validate`, `load`.

pub mod check_program;
pub mod file;
pub mod haproxy;
pub mod load;
pub mod model;
pub mod tls_client;
pub mod tls_files;
pub mod validate;

pub use file::ConfigFile;
pub use load::{from_toml_str, load_file, read_settled, LoadError};
pub use model::*;
pub use validate::{read_token, validate, ConfigError, EMPTY_CONFIG, MAX_DURATION};
