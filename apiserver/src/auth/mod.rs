//! Authentication: tokens, their hashes, and the identity of each request.

use rand::Rng;
use rand::distr::Alphanumeric;

use kohakuriver_api::auth::{TOKEN_ID_LEN, TOKEN_PREFIX, TOKEN_SECRET_LEN};

/// A new random token `krv_<id>_<secret>`: an 8-character public id and a 32-character
/// base62 secret (about 190 bits).
pub fn generate_token() -> String {
    let mut rng = rand::rng();
    let id: String = (0..TOKEN_ID_LEN)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    let secret: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(TOKEN_SECRET_LEN)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{id}_{secret}")
}
