//! The bounded pool of connections bound as the service account.
//!
//! A semaphore with `size` permits guards every connection: one is opened only by a caller
//! holding a permit and finding no idle connection, and a connection goes back to the idle list
//! before its permit is released, so `idle + busy` never exceeds `size`. Pooled connections are
//! only ever bound as the service account: user binds happen on separate connections.
//!
//! Health: an idle connection whose driver has ended (server closed it, restarted) is dropped
//! when taken; an operation that fails on a reused connection drops it together with every
//! other idle one (after a directory restart they are all dead) and is tried once more on a
//! fresh connection.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ldap3::Ldap;
use purser_core::Password;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::timeout;

use super::conn::Connector;
use super::error::{DirectoryError, Op};

/// Gauges of the service-account pool, for `purser_ldap_pool_connections{state}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections waiting for work.
    pub idle: usize,
    /// Connections in use.
    pub busy: usize,
    /// The most service connections ever open at once (never above `pool_size`).
    pub peak_open: usize,
    /// Service connections opened since start (grows when the directory restarts).
    pub opened: u64,
}

pub(crate) struct Pool {
    bind_dn: String,
    bind_password: Password,
    permits: Semaphore,
    idle: Mutex<Vec<Ldap>>,
    busy: AtomicUsize,
    open: AtomicUsize,
    peak: AtomicUsize,
    opened: AtomicU64,
    timeout: Duration,
}

struct Lease<'a> {
    pool: &'a Pool,
    ldap: Option<Ldap>,
    reused: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Closes the connection instead of returning it to the pool.
    fn discard(&mut self) {
        if self.ldap.take().is_some() {
            self.pool.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // Runs before the permit field is dropped: the connection is idle before another
        // caller may open a new one.
        if let Some(ldap) = self.ldap.take() {
            self.pool.idle_list().push(ldap);
        }
        self.pool.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// The service account's DN.
    pub(crate) fn bind_dn(&self) -> &str {
        &self.bind_dn
    }

    /// The service account's password (for `doctor ldap`'s own bind; never printed).
    pub(crate) fn bind_password(&self) -> &str {
        self.bind_password.expose()
    }

    pub(crate) fn new(
        bind_dn: String,
        bind_password: Password,
        size: usize,
        timeout: Duration,
    ) -> Self {
        Pool {
            bind_dn,
            bind_password,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::with_capacity(size)),
            busy: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            timeout,
        }
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Ldap>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            idle: self.idle_list().len(),
            busy: self.busy.load(Ordering::SeqCst),
            peak_open: self.peak.load(Ordering::SeqCst),
            opened: self.opened.load(Ordering::SeqCst),
        }
    }

    fn clear_idle(&self) {
        let dropped = std::mem::take(&mut *self.idle_list());
        self.open.fetch_sub(dropped.len(), Ordering::SeqCst);
    }

    async fn acquire(&self, connector: &Connector) -> Result<Lease<'_>, DirectoryError> {
        let permit = timeout(self.timeout, self.permits.acquire())
            .await
            .map_err(|_| DirectoryError::PoolBusy(self.timeout))?
            .map_err(|_| DirectoryError::PoolClosed)?;
        self.busy.fetch_add(1, Ordering::SeqCst);
        let mut lease = Lease {
            pool: self,
            ldap: None,
            reused: false,
            _permit: permit,
        };
        loop {
            let next = self.idle_list().pop();
            match next {
                Some(mut ldap) => {
                    if ldap.is_closed() {
                        drop(ldap);
                        self.open.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    lease.ldap = Some(ldap);
                    lease.reused = true;
                    return Ok(lease);
                }
                None => break,
            }
        }
        let mut ldap = connector.connect().await?;
        let bound = timeout(
            self.timeout,
            ldap.simple_bind(&self.bind_dn, self.bind_password.expose()),
        )
        .await
        .map_err(|_| DirectoryError::Timeout {
            op: Op::ServiceBind,
            timeout: self.timeout,
        })?
        .map_err(|source| DirectoryError::Protocol {
            op: Op::ServiceBind,
            source,
        })?;
        if bound.rc != 0 {
            return Err(DirectoryError::ServiceBindRefused {
                rc: bound.rc,
                text: bound.text,
            });
        }
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(open, Ordering::SeqCst);
        self.opened.fetch_add(1, Ordering::SeqCst);
        lease.ldap = Some(ldap);
        Ok(lease)
    }

    /// Runs `op` on a pooled connection, bounded by the timeout. `op` gets its own handle to the
    /// connection (handles are cheap clones of a channel). Protocol results with a non-zero
    /// result code are `Ok`: only transport failures and timeouts are `Err`.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        connector: &Connector,
        what: Op,
        op: F,
    ) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, ldap3::LdapError>>,
    {
        let mut retried = false;
        loop {
            let mut lease = self.acquire(connector).await?;
            let handle = lease.ldap.clone().expect("a lease holds a connection");
            match timeout(self.timeout, op(handle)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    lease.discard();
                    if lease.reused && !retried {
                        retried = true;
                        drop(lease);
                        self.clear_idle();
                        continue;
                    }
                    return Err(DirectoryError::Protocol {
                        op: what,
                        source: e,
                    });
                }
                Err(_) => {
                    lease.discard();
                    return Err(DirectoryError::Timeout {
                        op: what,
                        timeout: self.timeout,
                    });
                }
            }
        }
    }
}
