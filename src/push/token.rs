//! Push tokens from a REGISTER.
//!
//! Sources, first match wins:
//!
//! 1. RFC 8599 Contact URI parameters `pn-provider`, `pn-prid`, `pn-param`, including
//!    what Linphone / Flexisip clients send: `pn-provider=apns.dev` for the sandbox,
//!    `pn-prid=T1:voip&T2:remote` with `pn-param=TEAM.bundle.id.voip&remote` (a PushKit
//!    token and a regular alert token, in either order);
//! 2. the legacy Linphone parameters `pn-type`, `pn-tok`, `app-id`;
//! 3. the token header (`X-Token`, setting `push.token_header`);
//! 4. the token Contact URI parameter (`xToken`, setting `push.token_param`).
//!
//! Bare tokens (3 and 4) carry no provider: `push.default_provider` decides (`auto`: 64
//! hex digits is APNs, anything else FCM), and for APNs the topic and environment come
//! from `[push.apns]` with the environment marked as a guess.

use std::borrow::Cow;

use crate::config::{DefaultProvider, PushSettings};
use crate::sip::unescape;

use super::{Provider, PushInfo};

/// Longest token accepted (FCM tokens are ~160 characters; webhook tokens are opaque).
const MAX_TOKEN_LEN: usize = 1024;

/// Why the push parameters of a REGISTER cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `pn-provider` / `pn-type` names a service sipwake does not know (answer `555`).
    #[error("push provider {0:?} is not supported")]
    UnsupportedProvider(String),
    /// The parameters are present but unusable (answer `400` with this reason).
    #[error("{0}")]
    Malformed(&'static str),
}

/// The Contact URI's `;name=value` parameters, raw: only up to URI headers or the end
/// of a name-addr, names and values trimmed, values unquoted.
fn raw_params(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    let end = memchr::memchr2(b'?', b'>', raw.as_bytes()).unwrap_or(raw.len());
    raw[..end].split(';').filter_map(|p| {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        let (name, value) = match memchr::memchr(b'=', p.as_bytes()) {
            Some(k) => (&p[..k], &p[k + 1..]),
            None => (p, ""),
        };
        Some((name.trim(), value.trim().trim_matches('"')))
    })
}

/// The Contact URI parameters as (name, percent-decoded value) pairs, borrowed from
/// `raw` unless a value needs decoding (names compare case-insensitively in [`get`]).
fn params(raw: &str) -> Vec<(&str, Cow<'_, str>)> {
    let mut out = Vec::with_capacity(8);
    out.extend(raw_params(raw).map(|(name, value)| (name, unescape(value))));
    out
}

fn get<'a>(params: &'a [(&str, Cow<'_, str>)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// A token must be non-empty, printable ASCII without separators, and not huge.
fn check_token(t: &str) -> Result<(), TokenError> {
    if t.is_empty() {
        return Err(TokenError::Malformed("empty push token"));
    }
    if t.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("push token too long"));
    }
    if !t
        .bytes()
        .all(|c| c.is_ascii_graphic() && !matches!(c, b'/' | b'?' | b'#' | b'"' | b'\\'))
    {
        return Err(TokenError::Malformed("push token has invalid characters"));
    }
    Ok(())
}

fn is_hex64(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit())
}

/// An APNs team id: 10 upper-case letters or digits.
fn is_team_id(s: &str) -> bool {
    s.len() == 10
        && s.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The provider name for RFC 8599 Feature-Caps (`+sip.pns="apns"`), if the REGISTER
/// used `pn-provider` (returned lower-case, as sent, e.g. `apns.dev`).
pub fn pns_name(contact_uri_params: &str) -> Option<String> {
    // the first `pn-provider`, as `params` + `get` would find it, without decoding and
    // collecting every other parameter (this runs for every REGISTER)
    raw_params(contact_uri_params)
        .find_map(|(name, value)| {
            name.eq_ignore_ascii_case("pn-provider")
                .then(|| unescape(value))
        })
        .filter(|v| !v.is_empty())
        .map(|v| v.to_ascii_lowercase())
}

/// Push info from a REGISTER: `contact_uri_params` is the Contact URI's raw `;a=b;c`
/// part, `token_header` the value of the configured token header (if present).
/// `Ok(None)`: the REGISTER carries no token (a normal binding).
pub fn extract(
    contact_uri_params: &str,
    token_header: Option<&str>,
    settings: &PushSettings,
    now_ms: u64,
) -> Result<Option<PushInfo>, TokenError> {
    extract_with_pns(contact_uri_params, token_header, settings, now_ms).map(|(info, _)| info)
}

/// [`extract`], and with it what [`pns_name`] would return for the same parameters
/// (the RFC 8599 provider as sent, lower-case), from the one walk over them that every
/// REGISTER's Contact needs anyway.
pub fn extract_with_pns(
    contact_uri_params: &str,
    token_header: Option<&str>,
    settings: &PushSettings,
    now_ms: u64,
) -> Result<(Option<PushInfo>, Option<String>), TokenError> {
    let p = params(contact_uri_params);
    if let Some(provider) = get(&p, "pn-provider") {
        // an empty pn-provider is refused by rfc8599, so the name is never empty
        let info = rfc8599(&p, provider, settings, now_ms)?;
        return Ok((Some(info), Some(provider.to_ascii_lowercase())));
    }
    extract_bare(&p, token_header, settings, now_ms).map(|info| (info, None))
}

/// The push info of parameters without `pn-provider`: legacy Linphone ones, or a
/// bare token in the header or the token parameter.
fn extract_bare(
    p: &[(&str, Cow<'_, str>)],
    token_header: Option<&str>,
    settings: &PushSettings,
    now_ms: u64,
) -> Result<Option<PushInfo>, TokenError> {
    if let Some(kind) = get(p, "pn-type") {
        return legacy(p, kind, settings, now_ms).map(Some);
    }
    let header = token_header.map(str::trim).filter(|t| !t.is_empty());
    let param = get(p, &settings.token_param).filter(|t| !t.is_empty());
    match header.or(param) {
        Some(token) => bare(token, settings, now_ms).map(Some),
        None => Ok(None),
    }
}

fn base(provider: Provider, token: &str, now_ms: u64) -> PushInfo {
    PushInfo {
        provider,
        token: token.to_owned(),
        alert_token: None,
        topic: None,
        team_id: None,
        sandbox: false,
        env_guessed: false,
        registered_at_ms: now_ms,
        pn_param: None,
    }
}

/// A token without provider: `X-Token` or `xToken`.
fn bare(token: &str, settings: &PushSettings, now_ms: u64) -> Result<PushInfo, TokenError> {
    check_token(token)?;
    let provider = match settings.default_provider {
        DefaultProvider::Auto if is_hex64(token) => Provider::Apns,
        DefaultProvider::Auto | DefaultProvider::Fcm => Provider::Fcm,
        DefaultProvider::Apns => Provider::Apns,
        DefaultProvider::Webhook => Provider::Webhook,
    };
    let mut info = base(provider, token, now_ms);
    if provider == Provider::Apns {
        if let Some(apns) = &settings.apns {
            info.topic = apns.bundle_id.clone();
            info.team_id = apns.team_id.clone();
            info.sandbox = apns.sandbox;
        }
        info.env_guessed = true;
    }
    Ok(info)
}

/// Carries what pushes learnt about a token into the push info of a new REGISTER
/// carrying the same token: a bare APNs token's environment is a guess until a
/// `BadDeviceToken` retry finds the one that works, and the woken app's next REGISTER
/// must not bring the guess back (every later call would first fail on the wrong
/// environment). `old` is the push info stored with the device's binding.
pub fn keep_learnt(new: &mut PushInfo, old: &PushInfo) {
    if new.provider == Provider::Apns
        && old.provider == Provider::Apns
        && new.env_guessed
        && !old.env_guessed
        && new.token == old.token
    {
        new.sandbox = old.sandbox;
        new.env_guessed = false;
    }
}

/// RFC 8599 `pn-provider` / `pn-prid` / `pn-param`.
fn rfc8599(
    p: &[(&str, Cow<'_, str>)],
    provider: &str,
    settings: &PushSettings,
    now_ms: u64,
) -> Result<PushInfo, TokenError> {
    let (provider, sandbox) = match provider.to_ascii_lowercase().as_str() {
        "apns" | "apns.prod" => (Provider::Apns, false),
        "apns.dev" => (Provider::Apns, true),
        "fcm" | "firebase" => (Provider::Fcm, false),
        "webhook" => (Provider::Webhook, false),
        "" => return Err(TokenError::Malformed("empty pn-provider")),
        other => return Err(TokenError::UnsupportedProvider(other.to_owned())),
    };
    let prid = get(p, "pn-prid").ok_or(TokenError::Malformed("pn-provider without pn-prid"))?;
    let param = get(p, "pn-param").filter(|v| !v.is_empty());
    if param.is_some_and(|v| v.len() > MAX_TOKEN_LEN || v.bytes().any(|c| c.is_ascii_control())) {
        return Err(TokenError::Malformed(
            "pn-param too long or with control characters",
        ));
    }
    if provider != Provider::Apns {
        check_token(prid)?;
        let mut info = base(provider, prid, now_ms);
        info.pn_param = param.map(str::to_owned);
        return Ok(info);
    }

    // APNs: pn-param = [TEAM.]bundle.id[.services], services = voip&remote etc.
    let mut services: Vec<&str> = Vec::new();
    let mut team_id = None;
    let mut topic = None;
    if let Some(param) = param {
        let mut rest = param;
        if let Some((first, after)) = rest.split_once('.') {
            if is_team_id(first) {
                team_id = Some(first.to_owned());
                rest = after;
            }
        }
        if let Some((bundle, last)) = rest.rsplit_once('.') {
            let names: Vec<&str> = last.split('&').collect();
            if names.iter().all(|s| matches!(*s, "voip" | "remote")) {
                services = names;
                rest = bundle;
            }
        }
        if rest.is_empty() {
            return Err(TokenError::Malformed("pn-param has no bundle id"));
        }
        topic = Some(rest.to_owned());
    }
    if topic.is_none() {
        if let Some(apns) = &settings.apns {
            topic = apns.bundle_id.clone();
        }
    }

    // pn-prid = T1[:svc]&T2[:svc]; unlabelled tokens take the services in pn-param order.
    let mut voip = None;
    let mut remote = None;
    for (i, entry) in prid.split('&').enumerate() {
        let (token, svc) = match entry.rsplit_once(':') {
            Some((t, s)) if matches!(s, "voip" | "remote") => (t, s),
            _ => (entry, services.get(i).copied().unwrap_or("voip")),
        };
        check_token(token)?;
        let slot = if svc == "remote" {
            &mut remote
        } else {
            &mut voip
        };
        if slot.is_some() {
            return Err(TokenError::Malformed("pn-prid names a token type twice"));
        }
        *slot = Some(token.to_owned());
    }
    let Some(voip) = voip else {
        return Err(TokenError::Malformed(
            "pn-prid has no voip (PushKit) token; sipwake sends VoIP pushes",
        ));
    };
    let mut info = base(Provider::Apns, &voip, now_ms);
    info.alert_token = remote;
    info.topic = topic;
    info.team_id = team_id;
    info.sandbox = sandbox;
    info.pn_param = param.map(str::to_owned);
    Ok(info)
}

/// Legacy Linphone parameters: `pn-type=apple|firebase|google`, `pn-tok`, `app-id`
/// (`org.example.app[.voip][.prod|.dev]`).
fn legacy(
    p: &[(&str, Cow<'_, str>)],
    kind: &str,
    settings: &PushSettings,
    now_ms: u64,
) -> Result<PushInfo, TokenError> {
    let provider = match kind.to_ascii_lowercase().as_str() {
        "apple" | "apns" => Provider::Apns,
        "firebase" | "google" | "fcm" => Provider::Fcm,
        "" => return Err(TokenError::Malformed("empty pn-type")),
        other => return Err(TokenError::UnsupportedProvider(other.to_owned())),
    };
    let tok = get(p, "pn-tok").ok_or(TokenError::Malformed("pn-type without pn-tok"))?;
    // Some clients append the service to the token.
    let tok = tok.strip_suffix(":voip").unwrap_or(tok);
    check_token(tok)?;
    let mut info = base(provider, tok, now_ms);
    info.pn_param = get(p, "app-id")
        .filter(|a| !a.is_empty() && a.len() <= MAX_TOKEN_LEN)
        .filter(|a| !a.bytes().any(|c| c.is_ascii_control()))
        .map(str::to_owned);
    if provider == Provider::Apns {
        let mut env = None;
        let mut app = get(p, "app-id").filter(|a| !a.is_empty()).map(|a| {
            let mut a = a;
            if let Some(x) = a.strip_suffix(".prod") {
                env = Some(false);
                a = x;
            } else if let Some(x) = a.strip_suffix(".dev") {
                env = Some(true);
                a = x;
            }
            a.strip_suffix(".voip").unwrap_or(a).to_owned()
        });
        if app.is_none() {
            app = settings.apns.as_ref().and_then(|a| a.bundle_id.clone());
        }
        info.topic = app;
        info.team_id = settings.apns.as_ref().and_then(|a| a.team_id.clone());
        match env {
            Some(sandbox) => info.sandbox = sandbox,
            None => {
                info.sandbox = settings.apns.as_ref().is_some_and(|a| a.sandbox);
                info.env_guessed = true;
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApnsSettings;

    const HEX: &str = "aa11bb22cc33dd44ee55ff660011223344556677889900aabbccddeeff001122";
    const HEX2: &str = "ff11bb22cc33dd44ee55ff660011223344556677889900aabbccddeeff009999";

    fn settings() -> PushSettings {
        PushSettings {
            apns: Some(ApnsSettings {
                key_file: None,
                key_id: Some("KEY1234567".into()),
                team_id: Some("TEAM000001".into()),
                cert_file: None,
                bundle_id: Some("com.example.default".into()),
                sandbox: true,
                production_url: "https://api.push.apple.com".into(),
                sandbox_url: "https://api.sandbox.push.apple.com".into(),
                ca_file: None,
                payload_template: None,
            }),
            ..PushSettings::default()
        }
    }

    fn ex(params: &str, header: Option<&str>) -> Result<Option<PushInfo>, TokenError> {
        extract(params, header, &settings(), 42)
    }

    #[test]
    fn no_token_is_a_normal_binding() {
        assert_eq!(ex("", None), Ok(None));
        assert_eq!(ex(";transport=tcp;ob", None), Ok(None));
        assert_eq!(ex(";xToken=", Some("  ")), Ok(None));
    }

    #[test]
    fn linphone_voip_and_remote_either_order() {
        let a = ex(
            &format!(
                ";transport=tcp;pn-provider=apns.dev;pn-prid={HEX}:voip&{HEX2}:remote;\
                 pn-param=ABCD123456.org.linphone.phone.voip&remote"
            ),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.provider, Provider::Apns);
        assert_eq!(a.token, HEX);
        assert_eq!(a.alert_token.as_deref(), Some(HEX2));
        assert_eq!(a.topic.as_deref(), Some("org.linphone.phone"));
        assert_eq!(a.team_id.as_deref(), Some("ABCD123456"));
        assert!(a.sandbox);
        assert!(!a.env_guessed);
        assert_eq!(a.registered_at_ms, 42);
        assert_eq!(
            a.pn_param.as_deref(),
            Some("ABCD123456.org.linphone.phone.voip&remote")
        );

        let b = ex(
            &format!(
                ";pn-provider=apns.dev;pn-prid={HEX2}:remote&{HEX}:voip;\
                 pn-param=ABCD123456.org.linphone.phone.remote&voip"
            ),
            None,
        )
        .unwrap()
        .unwrap();
        let same = |x: &PushInfo| PushInfo {
            pn_param: None,
            ..x.clone()
        };
        assert_eq!(same(&a), same(&b));

        // Unlabelled tokens follow the order of the services in pn-param.
        let c = ex(
            &format!(
                ";pn-provider=apns.dev;pn-prid={HEX2}&{HEX};\
                 pn-param=ABCD123456.org.linphone.phone.remote&voip"
            ),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(same(&a), same(&c));
    }

    #[test]
    fn rfc8599_plain_apns_and_fcm() {
        let a = ex(
            &format!(";pn-provider=apns;pn-prid={HEX};pn-param=ABCD123456.com.acme.app.voip"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.token, HEX);
        assert_eq!(a.alert_token, None);
        assert_eq!(a.topic.as_deref(), Some("com.acme.app"));
        assert!(!a.sandbox && !a.env_guessed);

        // Without a team id the whole pn-param is the bundle.
        let a = ex(
            &format!(";pn-provider=APNS;pn-prid={HEX};pn-param=com.acme.app.voip"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.topic.as_deref(), Some("com.acme.app"));
        assert_eq!(a.team_id, None);

        // Without pn-param: the configured bundle.
        let a = ex(&format!(";pn-provider=apns;pn-prid={HEX}"), None)
            .unwrap()
            .unwrap();
        assert_eq!(a.topic.as_deref(), Some("com.example.default"));

        let f = ex(
            ";pn-provider=fcm;pn-prid=dGVzdA:APA91b-xyz_123;pn-param=my-project",
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.provider, Provider::Fcm);
        assert_eq!(f.token, "dGVzdA:APA91b-xyz_123");

        // pn-* wins over X-Token and xToken.
        let f = ex(
            &format!(";pn-provider=fcm;pn-prid=fcmtok;xToken={HEX}"),
            Some(HEX2),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.token, "fcmtok");
    }

    #[test]
    fn percent_escaped_values() {
        let a = ex(
            &format!(";pn-provider=apns;pn-prid={HEX}%3Avoip%26{HEX2}%3Aremote;pn-param=ABCD123456.com.acme.app.voip%26remote"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.token, HEX);
        assert_eq!(a.alert_token.as_deref(), Some(HEX2));
    }

    #[test]
    fn rfc8599_errors() {
        assert_eq!(
            ex(";pn-provider=webpush;pn-prid=x", None),
            Err(TokenError::UnsupportedProvider("webpush".into()))
        );
        assert!(matches!(
            ex(";pn-provider=apns", None),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            ex(";pn-provider=apns;pn-prid=", None),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            ex(
                &format!(";pn-provider=apns;pn-prid={HEX}:remote;pn-param=ABCD123456.a.b.remote"),
                None
            ),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            ex(
                &format!(";pn-provider=apns;pn-prid={HEX}:voip&{HEX2}:voip"),
                None
            ),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            ex(";pn-provider=fcm;pn-prid=a b", None),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn legacy_params() {
        let a = ex(
            &format!(";pn-type=apple;pn-tok={HEX};app-id=org.linphone.phone.voip.prod"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.provider, Provider::Apns);
        assert_eq!(a.token, HEX);
        assert_eq!(a.topic.as_deref(), Some("org.linphone.phone"));
        assert!(!a.sandbox && !a.env_guessed);

        let a = ex(
            &format!(";pn-type=apple;pn-tok={HEX}:voip;app-id=org.linphone.phone.dev"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.token, HEX);
        assert!(a.sandbox && !a.env_guessed);

        // No environment in app-id: a guess from settings.
        let a = ex(&format!(";pn-type=apple;pn-tok={HEX}"), None)
            .unwrap()
            .unwrap();
        assert_eq!(a.topic.as_deref(), Some("com.example.default"));
        assert!(a.sandbox && a.env_guessed);

        let f = ex(";pn-type=firebase;pn-tok=abc:def", None)
            .unwrap()
            .unwrap();
        assert_eq!((f.provider, f.token.as_str()), (Provider::Fcm, "abc:def"));
        let f = ex(";pn-type=google;pn-tok=abc", None).unwrap().unwrap();
        assert_eq!(f.provider, Provider::Fcm);

        assert_eq!(
            ex(";pn-type=wp;pn-tok=abc", None),
            Err(TokenError::UnsupportedProvider("wp".into()))
        );
        assert!(matches!(
            ex(";pn-type=apple", None),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn bare_tokens_header_before_param() {
        let a = ex(&format!(";xToken={HEX2}"), Some(HEX)).unwrap().unwrap();
        assert_eq!(a.token, HEX, "X-Token wins over xToken");
        assert_eq!(a.provider, Provider::Apns);
        assert_eq!(a.topic.as_deref(), Some("com.example.default"));
        assert_eq!(a.team_id.as_deref(), Some("TEAM000001"));
        assert!(a.sandbox && a.env_guessed);

        let a = ex(&format!(";transport=tcp;xtoken={HEX2}"), None)
            .unwrap()
            .unwrap();
        assert_eq!(a.token, HEX2, "parameter names are case-insensitive");

        // Not 64 hex: FCM.
        let f = ex("", Some("fcm-token:APA91b")).unwrap().unwrap();
        assert_eq!(f.provider, Provider::Fcm);
        assert_eq!(f.topic, None);
        assert!(!f.env_guessed);
        let f = ex(&format!(";xToken={}", &HEX[..63]), None)
            .unwrap()
            .unwrap();
        assert_eq!(f.provider, Provider::Fcm);

        assert!(matches!(
            ex("", Some("bad token")),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn default_provider_setting() {
        let mut s = settings();
        s.default_provider = DefaultProvider::Webhook;
        let w = extract("", Some(HEX), &s, 1).unwrap().unwrap();
        assert_eq!(w.provider, Provider::Webhook);
        assert!(!w.env_guessed);
        s.default_provider = DefaultProvider::Apns;
        let a = extract(";xToken=short", None, &s, 1).unwrap().unwrap();
        assert_eq!(a.provider, Provider::Apns);
        s.default_provider = DefaultProvider::Fcm;
        let f = extract("", Some(HEX), &s, 1).unwrap().unwrap();
        assert_eq!(f.provider, Provider::Fcm);

        // Other names for the header/param.
        s.token_param = "pushToken".into();
        let f = extract(";pushtoken=abc;xToken=zzz", None, &s, 1)
            .unwrap()
            .unwrap();
        assert_eq!(f.token, "abc");

        // Without [push.apns]: no topic, environment guessed as production.
        let s = PushSettings::default();
        let a = extract("", Some(HEX), &s, 1).unwrap().unwrap();
        assert_eq!(a.provider, Provider::Apns);
        assert_eq!(a.topic, None);
        assert!(!a.sandbox && a.env_guessed);
    }

    #[test]
    fn learnt_environment_is_kept_for_the_same_token() {
        let mut learnt = ex("", Some(HEX)).unwrap().unwrap();
        assert!(learnt.sandbox && learnt.env_guessed);
        learnt.sandbox = false;
        learnt.env_guessed = false;

        let mut again = ex("", Some(HEX)).unwrap().unwrap();
        keep_learnt(&mut again, &learnt);
        assert!(!again.sandbox && !again.env_guessed, "{again:?}");

        // another token, or a guess, teaches nothing
        let mut other = ex("", Some(HEX2)).unwrap().unwrap();
        keep_learnt(&mut other, &learnt);
        assert!(other.sandbox && other.env_guessed);
        let guess = ex("", Some(HEX)).unwrap().unwrap();
        let mut again = ex("", Some(HEX)).unwrap().unwrap();
        again.sandbox = false;
        keep_learnt(&mut again, &guess);
        assert!(!again.sandbox && again.env_guessed);

        // what the phone says itself (apns.dev) is never overridden
        let mut told = ex(&format!(";pn-provider=apns.dev;pn-prid={HEX}"), None)
            .unwrap()
            .unwrap();
        keep_learnt(&mut told, &learnt);
        assert!(told.sandbox && !told.env_guessed);
    }

    #[test]
    fn extract_names_the_provider_as_pns_name_does() {
        let s = settings();
        for params in [
            ";pn-provider=APNS;pn-prid=0123abcd;pn-param=ABCDE12345.org.example.voip".to_owned(),
            ";pn-provider=apns.dev;pn-prid=0123abcd:voip&4567ef:remote".to_owned(),
            ";ob; PN-Provider = \"%66cm\";pn-prid=tok".to_owned(),
            ";pn-provider=webhook;pn-prid=x;pn-provider=fcm".to_owned(),
            format!(";xToken={HEX}"),
            format!(";pn-type=apple;pn-tok={HEX};app-id=org.linphone.phone.voip.prod"),
            ";ob?pn-provider=fcm".to_owned(),
            String::new(),
        ] {
            let (info, pns) = extract_with_pns(&params, None, &s, 7).unwrap();
            assert_eq!(pns, pns_name(&params), "{params}");
            assert_eq!(info, extract(&params, None, &s, 7).unwrap(), "{params}");
        }
        // refused the same way
        for params in [";pn-provider=;pn-prid=x", ";pn-provider=xyz;pn-prid=x"] {
            assert_eq!(
                extract_with_pns(params, None, &s, 7).map(|(i, _)| i),
                extract(params, None, &s, 7)
            );
        }
    }

    #[test]
    fn pns_names() {
        assert_eq!(
            pns_name(";pn-provider=APNS;pn-prid=x").as_deref(),
            Some("apns")
        );
        assert_eq!(
            pns_name(";pn-provider=apns.dev;pn-prid=x").as_deref(),
            Some("apns.dev")
        );
        assert_eq!(pns_name(&format!(";xToken={HEX}")), None);
        assert_eq!(pns_name(";pn-type=apple;pn-tok=x"), None);
        assert_eq!(pns_name(";pn-provider="), None);
        // escaped, quoted, after other parameters; never from URI headers
        assert_eq!(
            pns_name(";ob; PN-Provider = \"%61pns\";pn-prid=x").as_deref(),
            Some("apns")
        );
        assert_eq!(pns_name(";ob?pn-provider=fcm"), None);
    }
}
