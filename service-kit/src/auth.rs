//! Who is calling, and what they may do.
//!
//! A caller shows a bearer token: a JWT (HS256) signed with a secret both
//! services and whoever issues tokens share (`AUTH_SECRET`), naming a user
//! (`sub`, `role: "user"`) or the operator (`role: "admin"`), with an
//! expiry (`exp`). [`Auth::caller`] turns a request's headers into a
//! [`Caller`]; the [`Caller`] methods are the rules both services apply:
//!
//! - a user acts for themselves only: opens their wallets, reads their
//!   wallets, their wallets' history and their activity;
//! - money leaves a wallet only by its owner's hand (not even the admin
//!   moves a user's money);
//! - money enters the system only by the operator: funding stands for a
//!   deposit the operator has received from outside (a card payment, a
//!   bank transfer), which no user can vouch for alone;
//! - the admin reads everything and opens wallets for anyone.
//!
//! In open mode ([`Auth::open`], the services' `--open`) nothing is
//! checked: every caller may do everything, as the original API allowed.
//!
//! Expiry is checked against [`Auth`]'s clock, so the simulator verifies
//! tokens on simulated time.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wallet_events::{Envelope, UserId, UserIdError};

/// The shortest secret accepted: HS256's key is as strong as its secret,
/// and 32 bytes is its hash's size (RFC 7518 §3.2).
pub const SECRET_MIN_BYTES: usize = 32;

/// What a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Admin,
    User(UserId),
}

impl Subject {
    /// The user `id` names, if it is a valid user id.
    pub fn user(id: &str) -> Result<Subject, UserIdError> {
        UserId::parse(id).map(Subject::User)
    }
}

/// Who made a request, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Open mode: nobody is checked, everything is allowed.
    Anyone,
    Admin,
    User(UserId),
}

impl Caller {
    /// May open wallets for `user` and read `user`'s wallets and activity.
    pub fn acts_for(&self, user: &str) -> bool {
        match self {
            Caller::Anyone | Caller::Admin => true,
            Caller::User(me) => me.as_str() == user,
        }
    }

    /// May add money to a wallet (the operator's deposit).
    pub fn may_fund(&self) -> bool {
        matches!(self, Caller::Anyone | Caller::Admin)
    }

    /// May move money out of a wallet `owner` owns.
    pub fn may_debit(&self, owner: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Admin => false,
            Caller::User(me) => me.as_str() == owner,
        }
    }

    /// Refuses unless `allowed`, saying what was refused.
    pub fn require(&self, allowed: bool, what: &'static str) -> Result<(), AuthError> {
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden(what))
        }
    }
}

impl fmt::Display for Caller {
    /// How an idempotency fingerprint names the caller: a key one caller
    /// used is another request for anyone else.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anyone => f.write_str("anyone"),
            Caller::Admin => f.write_str("admin"),
            Caller::User(user) => write!(f, "user {user}"),
        }
    }
}

/// Why a request is refused before it does anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs a bearer token (Authorization: Bearer <token>)")]
    MissingToken,
    #[error("the bearer token is malformed, forged or not for this system")]
    InvalidToken,
    #[error("the bearer token has expired")]
    TokenExpired,
    #[error("the caller may not {0}")]
    Forbidden(&'static str),
}

impl AuthError {
    /// Every code an [`AuthError`] answers with, for the services' lists.
    pub const CODES: [&'static str; 4] = [
        "missing_token",
        "invalid_token",
        "token_expired",
        "forbidden",
    ];

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AuthError::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            AuthError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AuthError::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
            AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        }
    }
}

impl IntoResponse for AuthError {
    /// The envelope with the code; a 401 also carries the challenge
    /// (RFC 6750 §3).
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response =
            (status, Json(Envelope::<()>::error(code, self.to_string()))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wallet-system\""),
            );
        }
        response
    }
}

/// A secret too short to sign with.
#[derive(Debug, thiserror::Error)]
#[error("the token secret must be at least {SECRET_MIN_BYTES} bytes (it has {0})")]
pub struct SecretTooShort(usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Admin,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iat: u64,
    exp: u64,
}

/// The signing keys of one secret: mints tokens and verifies them.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn new(secret: &[u8]) -> Result<Keys, SecretTooShort> {
        if secret.len() < SECRET_MIN_BYTES {
            return Err(SecretTooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the caller's clock (simulated time
        // under simulation), not the library's wall clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Keys {
            // Only an empty secret is refused, and it was refused above.
            encoding: EncodingKey::from_secret(secret).map_err(|_| SecretTooShort(0))?,
            decoding: DecodingKey::from_secret(secret).map_err(|_| SecretTooShort(0))?,
            validation,
        })
    }

    /// A token for `subject`, issued at `now` (Unix seconds), valid for `ttl`.
    pub fn mint(&self, subject: &Subject, now: u64, ttl: Duration) -> String {
        let (sub, role) = match subject {
            Subject::Admin => ("admin".to_owned(), Role::Admin),
            Subject::User(user) => (user.as_str().to_owned(), Role::User),
        };
        let claims = Claims {
            sub,
            role,
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signs any claims")
    }

    /// An `Authorization` header value: `Bearer ` and [`Keys::mint`]'s token.
    pub fn bearer(&self, subject: &Subject, now: u64, ttl: Duration) -> String {
        format!("Bearer {}", self.mint(subject, now, ttl))
    }

    /// Who `token` names, if this secret signed it and it has not expired
    /// at `now`.
    fn verify(&self, token: &str, now: u64) -> Result<Caller, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::InvalidToken)?
            .claims;
        if claims.exp <= now {
            return Err(AuthError::TokenExpired);
        }
        match claims.role {
            Role::Admin => Ok(Caller::Admin),
            Role::User => UserId::parse(&claims.sub)
                .map(Caller::User)
                .map_err(|_| AuthError::InvalidToken),
        }
    }
}

/// The `Authorization` header values of a client that acts as several
/// users and the admin (the load generator, the simulator's clients).
#[derive(Debug, Clone)]
pub struct Bearers {
    admin: String,
    users: BTreeMap<String, String>,
}

impl Bearers {
    /// A token for the admin and for each of `users`, issued at `now`
    /// (Unix seconds), valid for `ttl`.
    pub fn mint<'a>(
        keys: &Keys,
        users: impl IntoIterator<Item = &'a str>,
        now: u64,
        ttl: Duration,
    ) -> Result<Bearers, UserIdError> {
        let mut minted = BTreeMap::new();
        for user in users {
            if !minted.contains_key(user) {
                let token = keys.bearer(&Subject::user(user)?, now, ttl);
                minted.insert(user.to_owned(), token);
            }
        }
        Ok(Bearers {
            admin: keys.bearer(&Subject::Admin, now, ttl),
            users: minted,
        })
    }

    /// The admin's header value.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// `user`'s header value, if one was minted.
    pub fn user(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }
}

/// Unix seconds now: what production verifies expiry against.
pub fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A service's authentication: open, or tokens of one secret checked on
/// a clock.
#[derive(Clone)]
pub struct Auth {
    keys: Option<Keys>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Auth {
    /// Nothing checked: every request is [`Caller::Anyone`].
    pub fn open() -> Auth {
        Auth {
            keys: None,
            clock: Arc::new(unix_now),
        }
    }

    /// Tokens signed by `keys`, expiry on the wall clock.
    pub fn tokens(keys: Keys) -> Auth {
        Auth {
            keys: Some(keys),
            clock: Arc::new(unix_now),
        }
    }

    /// The same, with expiry checked on `clock` (Unix seconds).
    pub fn with_clock(self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Auth {
        Auth {
            clock: Arc::new(clock),
            ..self
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// The caller a request's `Authorization` header names.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let Some(keys) = &self.keys else {
            return Ok(Caller::Anyone);
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::MissingToken)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|text| {
                let (scheme, token) = text.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(AuthError::InvalidToken)?;
        keys.verify(token, (self.clock)())
    }
}

/// How a service is told to authenticate (`#[command(flatten)]`): a
/// secret, or `--open` on purpose.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// The secret that bearer tokens are signed with (HS256), at least 32
    /// bytes, shared with whoever issues tokens (`loadgen token`). Give it
    /// in the environment: the command line shows in `ps`. Required unless
    /// --open; an empty value counts as none.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// Serve without authentication: anyone who reaches the port may open,
    /// fund, read and move money out of any wallet. For local trials and
    /// clients of the original, unauthenticated API only.
    #[arg(long, env = "AUTH_OPEN")]
    pub open: bool,
}

impl AuthArgs {
    /// The service's [`Auth`]; open mode says so loudly in the log. (The
    /// two options are checked here rather than by clap, which counts a
    /// variable set to nothing or `false` as given.)
    pub fn auth(&self, service: &str) -> anyhow::Result<Auth> {
        let secret = self.auth_secret.as_deref().filter(|s| !s.is_empty());
        match (secret, self.open) {
            (Some(_), true) => anyhow::bail!(
                "both a token secret (AUTH_SECRET) and --open (AUTH_OPEN) are given: choose one"
            ),
            (None, false) => anyhow::bail!(
                "no token secret: set AUTH_SECRET (at least {SECRET_MIN_BYTES} bytes), or pass \
                 --open to serve without authentication"
            ),
            (Some(secret), false) => Ok(Auth::tokens(Keys::new(secret.as_bytes())?)),
            (None, true) => {
                tracing::warn!(
                    "{service} runs in OPEN MODE: no caller is authenticated; anyone who \
                     reaches its port may read every wallet and move any wallet's money"
                );
                eprintln!(
                    "WARNING: {service} runs in OPEN MODE (--open): no authentication at all"
                );
                Ok(Auth::open())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn auth() -> Auth {
        Auth::tokens(Keys::new(SECRET).unwrap()).with_clock(|| NOW)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_minted_token_names_its_subject_until_it_expires() {
        let keys = Keys::new(SECRET).unwrap();
        let user = keys.mint(&Subject::User(alice()), NOW - 10, Duration::from_secs(60));
        let admin = keys.mint(&Subject::Admin, NOW, Duration::from_secs(1));
        assert_eq!(auth().caller(&bearer(&user)), Ok(Caller::User(alice())));
        assert_eq!(auth().caller(&bearer(&admin)), Ok(Caller::Admin));
        let expired = keys.mint(&Subject::User(alice()), NOW - 61, Duration::from_secs(60));
        assert_eq!(
            auth().caller(&bearer(&expired)),
            Err(AuthError::TokenExpired)
        );
    }

    #[test]
    fn missing_forged_and_foreign_tokens_are_refused() {
        assert_eq!(
            auth().caller(&HeaderMap::new()),
            Err(AuthError::MissingToken)
        );
        let other = Keys::new(b"another secret, also 32 bytes long!").unwrap();
        let foreign = other.mint(&Subject::Admin, NOW, Duration::from_secs(60));
        assert_eq!(
            auth().caller(&bearer(&foreign)),
            Err(AuthError::InvalidToken)
        );
        // A user token whose claims were edited to say admin.
        let keys = Keys::new(SECRET).unwrap();
        let token = keys.mint(&Subject::User(alice()), NOW, Duration::from_secs(60));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let admin = keys.mint(&Subject::Admin, NOW, Duration::from_secs(60));
        parts[1] = admin.split('.').nth(1).unwrap().to_owned();
        assert_eq!(
            auth().caller(&bearer(&parts.join("."))),
            Err(AuthError::InvalidToken)
        );
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(auth().caller(&basic), Err(AuthError::InvalidToken));
        assert!(Keys::new(b"short").is_err());
    }

    #[test]
    fn a_service_starts_with_a_secret_or_open_but_not_both_nor_neither() {
        use clap::Parser;
        #[derive(Parser)]
        struct Service {
            #[command(flatten)]
            auth: AuthArgs,
        }
        let auth = |args: &[&str]| {
            let args = [&["service"], args].concat();
            Service::try_parse_from(args).unwrap().auth.auth("test")
        };
        let secret = std::str::from_utf8(SECRET).unwrap();
        assert!(!auth(&["--auth-secret", secret]).unwrap().is_open());
        assert!(auth(&["--open"]).unwrap().is_open());
        assert!(auth(&["--open", "--auth-secret", ""]).unwrap().is_open());
        assert!(auth(&["--open", "--auth-secret", secret]).is_err());
        assert!(auth(&["--auth-secret", "short"]).is_err());
        if std::env::var_os("AUTH_SECRET").is_none() && std::env::var_os("AUTH_OPEN").is_none() {
            assert!(auth(&[]).is_err());
        }
    }

    #[test]
    fn open_mode_lets_anyone_do_anything() {
        let caller = Auth::open().caller(&HeaderMap::new()).unwrap();
        assert_eq!(caller, Caller::Anyone);
        assert!(caller.may_fund() && caller.may_debit("bob") && caller.acts_for("bob"));
    }

    #[test]
    fn only_owners_move_money_and_only_the_admin_adds_it() {
        let alice = Caller::User(alice());
        assert!(alice.may_debit("alice") && !alice.may_debit("bob"));
        assert!(alice.acts_for("alice") && !alice.acts_for("bob"));
        assert!(!alice.may_fund());
        assert!(Caller::Admin.may_fund() && Caller::Admin.acts_for("bob"));
        assert!(!Caller::Admin.may_debit("bob"));
        assert_eq!(
            alice.require(false, "fund").unwrap_err().status_and_code(),
            (StatusCode::FORBIDDEN, "forbidden")
        );
    }
}
