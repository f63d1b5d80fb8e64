//! PostgreSQL's `LISTEN/NOTIFY`, for what every instance on one database must hear at once
//! (the console's live calls): [`Store::notify_all`] publishes, [`listen`] receives.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Backend, Store};

/// Longest wait between attempts to (re)connect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Store {
    /// Publishes each text from `texts` on `channel` until the queue closes. Nothing on
    /// SQLite (one instance: nobody else to tell). A failed publish is logged and skipped.
    pub async fn notify_all(&self, channel: &str, mut texts: mpsc::Receiver<String>) {
        if self.backend != Backend::Postgres {
            while texts.recv().await.is_some() {}
            return;
        }
        while let Some(text) = texts.recv().await {
            self.count_query();
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(&text)
                .execute(self.pool())
                .await
            {
                tracing::debug!(error = %e, channel, "Could not publish on the channel.");
            }
        }
    }
}

/// Hands every text published on `channel` of the PostgreSQL database at `url` to `on`,
/// forever: the connection is made again (backing off up to 30 s) whenever it fails. Returns
/// at once for a database that is not PostgreSQL.
pub async fn listen(url: &str, channel: &str, mut on: impl FnMut(&str)) {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return;
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        match sqlx::postgres::PgListener::connect(url).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(250);
                    loop {
                        match listener.recv().await {
                            Ok(n) => on(n.payload()),
                            Err(e) => {
                                tracing::warn!(error = %e, channel, "Lost the channel's connection; listening again.");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, channel, "Could not listen on the channel."),
            },
            Err(e) => {
                tracing::warn!(error = %e, channel, "Could not connect to listen on the channel.")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
