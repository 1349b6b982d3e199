//! kubernaut DataStorage's audit database as a migration source (docs/migration.md).
//!
//! - [`canonical`]: the bytes its hash chain covers and the hash, reproducing its vectors.
//! - [`verify`]: its chain verification, and what a failing chain's failure is.
//! - [`db`]: rows in and out of PostgreSQL.
//! - [`migrate`]: the migration of one database.

pub mod canonical;
pub mod db;
pub mod migrate;
pub mod verify;
