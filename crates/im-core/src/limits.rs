//! Input limits: every field a client fills in has one.

use crate::ImError;

/// Default for `server.max_message_size` (`MAX_MESSAGE_SIZE`), bytes of body.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024;
/// Longest `content_type` accepted.
pub const MAX_CONTENT_TYPE_LEN: usize = 64;
/// Default and maximum page size for sync.
pub const DEFAULT_SYNC_LIMIT: u32 = 100;
pub const MAX_SYNC_LIMIT: u32 = 500;

/// Checks a message body against the configured maximum.
pub fn check_body(body_len: usize, max: usize) -> Result<(), ImError> {
    if body_len == 0 {
        return Err(ImError::invalid("message body is empty"));
    }
    if body_len > max {
        return Err(ImError::exhausted(format!(
            "message body is {body_len} bytes, the limit is {max} (MAX_MESSAGE_SIZE)"
        )));
    }
    Ok(())
}

pub fn check_content_type(content_type: &str) -> Result<(), ImError> {
    if content_type.len() > MAX_CONTENT_TYPE_LEN {
        return Err(ImError::invalid(format!(
            "content_type is {} bytes, the limit is {MAX_CONTENT_TYPE_LEN}",
            content_type.len()
        )));
    }
    // It is echoed to every reader and into logs and metrics labels: no
    // line breaks, escapes or other control characters.
    if let Some(bad) = content_type.chars().find(|c| c.is_control()) {
        return Err(ImError::invalid(format!("content_type may not hold control characters, found {bad:?}")));
    }
    Ok(())
}

/// How many of `bodies` (in page order) fit in `max_bytes` of bodies: at
/// least one, so a message larger than the limit is still delivered.
pub fn page_prefix_within(bodies: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut count = 0;
    for size in bodies {
        total = total.saturating_add(size);
        if count > 0 && total > max_bytes {
            break;
        }
        count += 1;
    }
    count
}

/// The page size a sync request gets: 0 means the default, larger is capped.
pub fn sync_page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_SYNC_LIMIT,
        n => n.min(MAX_SYNC_LIMIT),
    }
}

/// The key a limit per client address counts under: the address, or its /64
/// for IPv6 (one host commonly holds a whole /64); an IPv4-mapped IPv6
/// address is its IPv4 address.
pub fn client_source(peer: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn body_limits() {
        assert_eq!(check_body(0, 10).unwrap_err().code, ErrorCode::InvalidArgument);
        assert!(check_body(10, 10).is_ok());
        assert_eq!(check_body(11, 10).unwrap_err().code, ErrorCode::ResourceExhausted);
    }

    #[test]
    fn content_type_limit() {
        assert!(check_content_type("text/plain").is_ok());
        assert!(check_content_type(&"x".repeat(65)).is_err());
        assert!(check_content_type("text/plain; charset=utf-8").is_ok());
        for bad in ["text/plain\r\nX-Evil: 1", "text/\u{1b}[31m", "a\u{0}b", "x\u{85}y"] {
            assert_eq!(check_content_type(bad).unwrap_err().code, ErrorCode::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn pages_stop_before_the_body_that_would_pass_the_byte_limit() {
        assert_eq!(page_prefix_within([400, 400, 400], 1000), 2);
        assert_eq!(page_prefix_within([400, 600, 1], 1000), 2, "exactly the limit fits");
        assert_eq!(page_prefix_within([5000, 1], 1000), 1, "one message always");
        assert_eq!(page_prefix_within([], 1000), 0);
    }

    #[test]
    fn sync_page_sizes() {
        assert_eq!(sync_page_size(0), DEFAULT_SYNC_LIMIT);
        assert_eq!(sync_page_size(7), 7);
        assert_eq!(sync_page_size(10_000), MAX_SYNC_LIMIT);
    }
}

/// Longest user name accepted.
pub const MAX_USER_NAME_LEN: usize = 64;

/// A user name is 1..=64 characters of ASCII letters, digits, `_`, `-`, `.`.
pub fn check_user_name(name: &str) -> Result<(), ImError> {
    if name.is_empty() || name.len() > MAX_USER_NAME_LEN {
        return Err(ImError::invalid(format!("user name must be 1 to {MAX_USER_NAME_LEN} characters")));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(ImError::invalid(format!(
            "user name may only hold letters, digits, '_', '-' and '.', found {bad:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod user_name_tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(check_user_name("alice_1.b-c").is_ok());
        assert!(check_user_name("").is_err());
        assert!(check_user_name(&"a".repeat(65)).is_err());
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name("ålice").is_err());
    }
}

#[cfg(test)]
mod client_source_tests {
    use std::net::IpAddr;

    use super::client_source;

    #[test]
    fn ipv6_peers_share_the_key_of_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_source(a), client_source(b));
        assert_ne!(client_source(a), client_source(other));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(client_source(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }
}
