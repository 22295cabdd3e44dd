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
        timeout: c.timeout.0,
        pool_size: c.pool_size,
    };
    purser_authn::ldap::LdapAuthenticator::new(settings).map_err(|e| format!("authn.ldap: {e}"))
}
