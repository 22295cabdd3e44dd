//! The `authn.ldap` block turned into the LDAP backend's settings.

use crate::config::LdapConfig;

pub fn build(c: &LdapConfig) -> Result<purser_authn::ldap::LdapAuthenticator, String> {
    let settings = purser_authn::ldap::LdapSettings {
        urls: c.urls.clone(),
        start_tls: c.start_tls,
        ca_file: c.ca_file.clone(),
        bind_dn: c.bind_dn.clone(),
        bind_password: purser_core::Password::new(c.bind_password.clone()),
        user_dn: c.user_dn.clone(),
        user_base: c.user_base.clone(),
        user_filter: c.user_filter.clone(),
        group_base: c.group_base.clone(),
        group_filter: c.group_filter.clone(),
        group_name_attribute: c.group_name_attribute.clone(),
        account_attribute: c.account_attribute.clone(),
        timeout: c.timeout.0,
        pool_size: c.pool_size,
    };
    purser_authn::ldap::LdapAuthenticator::new(settings).map_err(|e| format!("authn.ldap: {e}"))
}

/// Keeps `purser_ldap_pool_connections{state}` current: set now, then refreshed once a second
/// from the pool's counters for as long as the backend lives. A task rather than a refresh on
/// scrape keeps the metrics listener free of backend knowledge.
pub fn export_pool_gauges(
    ldap: &std::sync::Arc<purser_authn::ldap::LdapAuthenticator>,
    metrics: &crate::metrics::Metrics,
) {
    let gauge = metrics.ldap_pool_connections.clone();
    let set = move |s: purser_authn::ldap::PoolStats| {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        gauge.with_label_values(&["idle"]).set(n(s.idle));
        gauge.with_label_values(&["busy"]).set(n(s.busy));
    };
    set(ldap.pool_stats());
    // Outside a runtime (a synchronous caller) the gauges keep their first values.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = std::sync::Arc::downgrade(ldap);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ldap) = weak.upgrade() else { return };
            set(ldap.pool_stats());
        }
    });
}
