//! Why the directory refused a bind, in words: the LDAP result code, and Active Directory's
//! `data` code from the diagnostic message (`80090308: LdapErr: DSID-..., comment:
//! AcceptSecurityContext error, data 533, v4563`).

use std::fmt;

/// A bind the directory refused: its result code and diagnostic message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindRefusal {
    pub rc: u32,
    pub text: String,
}

impl BindRefusal {
    /// Active Directory's sub-code, when the message carries one (`data 52e`).
    pub fn ad_code(&self) -> Option<&str> {
        let at = self.text.find("data ")?;
        let rest = &self.text[at + 5..];
        let code = rest
            .split(|c: char| !c.is_ascii_hexdigit())
            .next()
            .filter(|c| !c.is_empty() && c.len() <= 8)?;
        Some(code)
    }

    /// The reason in a few words, for the log.
    pub fn reason(&self) -> &'static str {
        match self.ad_code().map(str::to_ascii_lowercase).as_deref() {
            Some("525") => "no such user",
            Some("52e") => "wrong password",
            Some("530") => "logins not permitted at this time",
            Some("531") => "logins not permitted from this workstation",
            Some("532") => "password expired",
            Some("533") => "account disabled",
            Some("701") => "account expired",
            Some("773") => "password must be changed",
            Some("775") => "account locked",
            _ => match self.rc {
                49 => "wrong password or no such user",
                48 => "inappropriate authentication",
                50 => "insufficient access rights",
                53 => "unwilling to perform (account locked or disabled, or the password policy)",
                19 => "constraint violation (password policy)",
                34 => "the bind name is not a valid DN",
                32 => "no such entry",
                _ => "refused",
            },
        }
    }
}

impl fmt::Display for BindRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (result code {}", self.reason(), self.rc)?;
        if let Some(code) = self.ad_code() {
            write!(f, ", Active Directory data {code}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::BindRefusal;

    fn r(rc: u32, text: &str) -> BindRefusal {
        BindRefusal {
            rc,
            text: text.into(),
        }
    }

    #[test]
    fn active_directory_codes_read_in_words() {
        let text = |code| {
            format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1")
        };
        assert_eq!(r(49, &text("52e")).reason(), "wrong password");
        assert_eq!(r(49, &text("533")).reason(), "account disabled");
        assert_eq!(r(49, &text("775")).reason(), "account locked");
        assert_eq!(r(49, &text("532")).reason(), "password expired");
        assert_eq!(r(49, &text("773")).reason(), "password must be changed");
        assert_eq!(
            r(49, &text("533")).to_string(),
            "account disabled (result code 49, Active Directory data 533)"
        );
    }

    #[test]
    fn other_directories_read_by_result_code() {
        assert_eq!(r(49, "").reason(), "wrong password or no such user");
        assert_eq!(
            r(49, "").to_string(),
            "wrong password or no such user (result code 49)"
        );
        assert_eq!(r(53, "account locked").ad_code(), None);
    }
}
