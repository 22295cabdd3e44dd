//! What the command line changes in the files a running server watches: machine tokens
//! (`purser token create|list|revoke`), the policy (`purser policy promote`) and, through the
//! revocations module, revoked refresh tokens. Every write goes through [`file_update`]: a
//! lock, then a rename.

pub mod file_update;
pub mod promote;
pub mod tokens;
