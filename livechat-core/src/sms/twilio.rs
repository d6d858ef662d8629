//! Twilio: the gateway for the Messages API, and the check of the `X-Twilio-Signature`
//! that every webhook request from Twilio carries.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{OutboundSms, SendFuture, SmsError, SmsGateway};

/// Twilio's API, unless configured otherwise (a test stand-in, a regional edge).
pub const DEFAULT_API_BASE_URL: &str = "https://api.twilio.com";

/// The largest answer read from the API; Twilio's are a few kilobytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TwilioError {
    /// The HTTP client could not be set up (TLS roots, …).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The account SID or auth token is empty.
    #[error("the Twilio account SID and auth token must be set")]
    MissingCredentials,
}

/// Sends SMS with Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).
///
/// ```
/// # fn demo() -> Result<(), livechat_core::sms::twilio::TwilioError> {
/// use livechat_core::sms::twilio::{DEFAULT_API_BASE_URL, TwilioGateway};
/// let gateway = TwilioGateway::new("AC123", "auth-token", DEFAULT_API_BASE_URL)?
///     .status_callback("https://chat.example.com/webhooks/twilio/status");
/// # let _ = gateway; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TwilioGateway {
    client: reqwest::Client,
    messages_url: String,
    account_sid: String,
    auth_token: String,
    status_callback: Option<String>,
}

impl std::fmt::Debug for TwilioGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioGateway")
            .field("messages_url", &self.messages_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<set>")
            .finish_non_exhaustive()
    }
}

impl TwilioGateway {
    /// A gateway for the account, on `api_base_url` (see [`DEFAULT_API_BASE_URL`]).
    pub fn new(
        account_sid: impl Into<String>,
        auth_token: impl Into<String>,
        api_base_url: &str,
    ) -> Result<Self, TwilioError> {
        let (account_sid, auth_token) = (account_sid.into(), auth_token.into());
        if account_sid.is_empty() || auth_token.is_empty() {
            return Err(TwilioError::MissingCredentials);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(TwilioError::Client)?;
        let messages_url = format!(
            "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
            api_base_url.trim_end_matches('/')
        );
        Ok(Self {
            client,
            messages_url,
            account_sid,
            auth_token,
            status_callback: None,
        })
    }

    /// Asks Twilio to report each SMS's status to `url` (the server's
    /// `/webhooks/twilio/status`).
    pub fn status_callback(mut self, url: impl Into<String>) -> Self {
        self.status_callback = Some(url.into());
        self
    }

    async fn post(&self, sms: &OutboundSms) -> Result<String, SmsError> {
        let mut form = vec![
            ("To", sms.to.as_str()),
            ("From", sms.from.as_str()),
            ("Body", sms.body.as_str()),
        ];
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url));
        }
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let res = self
            .client
            .post(&self.messages_url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| SmsError::Temporary(format!("cannot reach Twilio: {e}")))?;
        let status = res.status();
        let answer = read_capped(res).await?;
        let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        let said = || {
            format!(
                "HTTP {}: {} {}",
                status.as_u16(),
                json["code"],
                json["message"].as_str().unwrap_or("")
            )
        };
        if status.is_success() {
            return json["sid"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| SmsError::Temporary("Twilio's answer has no sid".into()));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(SmsError::Temporary(said()));
        }
        Err(SmsError::Refused(said()))
    }
}

async fn read_capped(mut res: reqwest::Response) -> Result<Vec<u8>, SmsError> {
    let mut answer = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| SmsError::Temporary(format!("Twilio's answer broke off: {e}")))?
    {
        if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(SmsError::Temporary("Twilio's answer is too large".into()));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer)
}

impl SmsGateway for TwilioGateway {
    fn send<'a>(&'a self, sms: &'a OutboundSms) -> SendFuture<'a> {
        Box::pin(self.post(sms))
    }
}

fn signed_data(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.as_bytes().to_vec();
    for (key, value) in sorted {
        data.extend_from_slice(key.as_bytes());
        data.extend_from_slice(value.as_bytes());
    }
    data
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(&signed_data(url, params));
    mac
}

/// The signature Twilio sends for a request to `url` (the full URL Twilio called,
/// query string included) with the form parameters `params`: HMAC-SHA1 with the auth
/// token over the URL followed by every parameter's name and value, sorted by name,
/// in base64.
///
/// ```
/// use livechat_core::sms::twilio::signature;
/// // The example of Twilio's documentation.
/// let params: Vec<(String, String)> = [
///     ("CallSid", "CA1234567890ABCDE"),
///     ("Caller", "+14158675309"),
///     ("Digits", "1234"),
///     ("From", "+14158675309"),
///     ("To", "+18005551212"),
/// ]
/// .into_iter()
/// .map(|(k, v)| (k.to_owned(), v.to_owned()))
/// .collect();
/// let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
/// assert_eq!(signature("12345", url, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// ```
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `header` (the `X-Twilio-Signature` value) is Twilio's signature of the
/// request. The comparison takes the same time however much of it matches. A missing
/// or malformed header is not valid.
pub fn signature_is_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> bool {
    let Some(given) = header.and_then(|h| BASE64.decode(h.trim()).ok()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented() -> (String, Vec<(String, String)>) {
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2".to_owned(),
            params,
        )
    }

    const DOCUMENTED: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    #[test]
    fn only_the_valid_signature_is_accepted() {
        let (url, params) = documented();
        assert!(signature_is_valid("12345", &url, &params, Some(DOCUMENTED)));

        let mut order = params.clone();
        order.reverse();
        assert!(
            signature_is_valid("12345", &url, &order, Some(DOCUMENTED)),
            "the parameters' order on the wire does not matter"
        );
        let mut tampered = params.clone();
        tampered[2].1 = "1235".into();
        assert!(
            !signature_is_valid("12345", &url, &tampered, Some(DOCUMENTED)),
            "a tampered parameter"
        );
        let mut added = params.clone();
        added.push(("Body".into(), "extra".into()));
        assert!(
            !signature_is_valid("12345", &url, &added, Some(DOCUMENTED)),
            "an added parameter"
        );
        assert!(
            !signature_is_valid(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params,
                Some(DOCUMENTED)
            ),
            "a wrong URL"
        );
        assert!(
            !signature_is_valid(
                "12345",
                "http://mycompany.com/myapp.php?foo=1&bar=2",
                &params,
                Some(DOCUMENTED)
            ),
            "the scheme is part of the URL"
        );
        assert!(
            !signature_is_valid("54321", &url, &params, Some(DOCUMENTED)),
            "another account's token"
        );
        assert!(
            !signature_is_valid("12345", &url, &params, None),
            "a missing header"
        );
        assert!(
            !signature_is_valid("12345", &url, &params, Some("")),
            "an empty header"
        );
        assert!(
            !signature_is_valid("12345", &url, &params, Some("not base64!")),
            "garbage"
        );
        assert!(
            !signature_is_valid("12345", &url, &params, Some(&DOCUMENTED[..20])),
            "a prefix of the signature"
        );
    }
}
