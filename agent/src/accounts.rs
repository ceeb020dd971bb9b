//! Names of users and groups to ids, through the system's user database
//! (NSS: /etc/passwd, /etc/group, LDAP, …), so that the config can say
//! `user = "my-app"` and the agent compares ids.

use std::ffi::{CStr, CString};

/// The uid of user `name` (getpwnam_r); the error completes "`key` = name: …".
pub fn user_id(name: &str) -> Result<u32, String> {
    lookup(name, |cname, buf| {
        // SAFETY: all-zero is a valid passwd (null pointers, zero ids).
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the buffer is ours.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(entry.pw_uid))
    })
}

/// The gid of group `name` (getgrnam_r); the error completes "`key` = name: …".
pub fn group_id(name: &str) -> Result<u32, String> {
    lookup(name, |cname, buf| {
        // SAFETY: all-zero is a valid group (null pointers, zero ids).
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the buffer is ours.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (!result.is_null()).then_some(entry.gr_gid))
    })
}

/// Runs a `get*nam_r` call, growing the buffer while it reports ERANGE.
fn lookup(
    name: &str,
    call: impl Fn(&CStr, &mut [libc::c_char]) -> (libc::c_int, Option<u32>),
) -> Result<u32, String> {
    let cname = CString::new(name).map_err(|_| "contains a NUL byte".to_string())?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        match call(&cname, &mut buf) {
            (0, Some(id)) => return Ok(id),
            (0, None) => return Err("no such name on this host".into()),
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            (rc, _) => {
                return Err(format!(
                    "lookup failed ({})",
                    std::io::Error::from_raw_os_error(rc)
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_zero() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
    }

    #[test]
    fn unknown_and_malformed_names_are_errors() {
        assert_eq!(
            user_id("no-such-user-xq").unwrap_err(),
            "no such name on this host"
        );
        assert_eq!(
            group_id("no-such-group-xq").unwrap_err(),
            "no such name on this host"
        );
        assert_eq!(user_id("ro\0ot").unwrap_err(), "contains a NUL byte");
    }
}
