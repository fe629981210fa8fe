//! `public/subscribe` and `private/subscribe` (reference §4.1) as a [`SubscriptionHandler`].

use serde_json::json;
use websockex_nova::behaviour::{Call, SubscriptionHandler};
use websockex_nova::{Error, RawJson};

use crate::channels::is_private;

/// Batches with a private channel go through `private/` (which also takes public
/// channels on an authenticated connection); the rest through `public/`. The ack is the
/// list of channels subscribed, possibly reordered, with unknown ones silently left out.
#[derive(Debug, Clone)]
pub struct DeribitSubscriptions {
    pub(crate) batch: usize,
}

impl DeribitSubscriptions {
    fn call(&self, verb: &str, channels: &[String]) -> Call {
        let scope = if channels.iter().any(|c| is_private(c)) {
            "private"
        } else {
            "public"
        };
        Call {
            method: format!("{scope}/{verb}"),
            params: json!({ "channels": channels }),
        }
    }
}

impl SubscriptionHandler for DeribitSubscriptions {
    fn subscribe(&mut self, channels: &[String]) -> Call {
        self.call("subscribe", channels)
    }

    fn unsubscribe(&mut self, channels: &[String]) -> Call {
        self.call("unsubscribe", channels)
    }

    fn confirmed(&mut self, _requested: &[String], ack: &RawJson) -> Result<Vec<String>, Error> {
        ack.decode_owned()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_channels_pick_the_private_method() {
        let mut s = DeribitSubscriptions { batch: 500 };
        let public = s.subscribe(&["ticker.BTC-PERPETUAL.100ms".into()]);
        assert_eq!(public.method, "public/subscribe");
        let mixed = s.subscribe(&[
            "ticker.BTC-PERPETUAL.100ms".into(),
            "user.portfolio.btc".into(),
        ]);
        assert_eq!(mixed.method, "private/subscribe");
        assert_eq!(
            s.unsubscribe(&["user.portfolio.btc".into()]).method,
            "private/unsubscribe"
        );
        let ack = RawJson::from_string(r#"["b","a"]"#.into()).unwrap();
        assert_eq!(s.confirmed(&[], &ack).unwrap(), ["b", "a"]);
    }
}
