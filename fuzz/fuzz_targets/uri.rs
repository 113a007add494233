//! URI parsing and the push token extraction from a Contact (RFC 8599 `pn-*`,
//! legacy Linphone params, `X-Token`, `xToken`) on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipwake::config::PushSettings;
use sipwake::sip::{NameAddr, Uri};

fn settings() -> &'static PushSettings {
    static S: std::sync::OnceLock<PushSettings> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        sipwake::config::from_toml_str(
            "[push.apns]\nbundle_id = \"com.example.app\"\nteam_id = \"ABCDE12345\"\n",
        )
        .map(|s| s.push)
        .unwrap_or_else(|_| sipwake::config::from_toml_str("").expect("defaults").push)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // the split lets one input carry a contact and a token header
    let (contact, header) = match s.split_once('\n') {
        Some((c, h)) => (c, Some(h)),
        None => (s, None),
    };
    if let Ok(u) = Uri::parse(contact) {
        let _ = (u.host_bare(), u.ip(), u.transport(), u.match_key(), u.aor());
        if let Ok(u2) = Uri::parse(contact) {
            assert_eq!(u, u2);
        }
        let _ = sipwake::push::extract(u.params, header, settings(), 1);
    }
    if let Ok(na) = NameAddr::parse(contact, "Contact") {
        let _ = (na.tag(), na.param("expires"));
        if let Ok(u) = Uri::parse(na.uri) {
            let _ = sipwake::push::extract(u.params, header, settings(), 1);
            let _ = sipwake::push::pns_name(u.params);
        }
    }
    let _ = sipwake::push::extract(contact, header, settings(), 1);
});
