//! `caly migrate` and `caly apikey`: the call-records database from the command line.

use anyhow::Context as _;
use clap::Subcommand;

use caly::store::Store;
use caly::store::keys::{MAX_NAME, Scope};

/// Which database to open.
#[derive(Debug, clap::Args)]
pub(crate) struct DbArgs {
    /// `sqlite://FILE` or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://caly.db",
        hide_env_values = true
    )]
    pub(crate) database_url: String,
}

/// Manage REST API keys.
#[derive(Debug, Subcommand)]
pub(crate) enum ApikeyCommand {
    /// Create a key; it is printed once, as the last line of stdout, and only its hash is kept.
    Create {
        /// Who or what uses it.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, default_value = "read", value_parser = ["read", "write", "admin"])]
        scope: String,
        /// The key stops working this many days from now; unset = until revoked.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3650))]
        expires_in_days: Option<u64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List keys (never their secrets): id, name, scope, created, expires, last used, revoked.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id (printed when it was created).
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `caly erase`: erase the personal data of every call from a number.
#[derive(Debug, clap::Args)]
pub(crate) struct EraseArgs {
    /// The caller's number, in any spelling (`+91 98765 43210`, `09876543210`).
    #[arg(long)]
    phone: String,
    #[command(flatten)]
    db: DbArgs,
}

/// Erases every ended call from `--phone` and says how many.
pub(crate) async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        caly::vocab::normalize_number(&args.phone).is_some(),
        "--phone must be a phone number"
    );
    let store = migrate(&args.db).await?;
    let erased = store.erase_phone(&args.phone, "cli").await?;
    println!(
        "Erased {erased} call(s) from {}.",
        caly::vocab::masked_phone(&args.phone)
    );
    Ok(())
}

/// Opens the database and applies its migrations.
pub(crate) async fn migrate(db: &DbArgs) -> anyhow::Result<Store> {
    let url = caly::store::redact_url(&db.database_url);
    let store = Store::connect_with(&db.database_url, 2)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    store.migrate().await.context("migration failed")?;
    Ok(store)
}

/// Creates or revokes a key.
pub(crate) async fn apikey(cmd: ApikeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApikeyCommand::Create {
            name,
            scope,
            expires_in_days,
            db,
        } => {
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.len() <= MAX_NAME,
                "--name must be 1 to {} characters",
                MAX_NAME
            );
            let scope: Scope = scope.parse().map_err(anyhow::Error::msg)?;
            let store = migrate(&db).await?;
            let expires_at = expires_in_days.map(|days| {
                caly::store::now_ms()
                    .saturating_add(i64::try_from(days).unwrap_or(3650) * 86_400_000)
            });
            let key = store
                .create_api_key_expiring(name, scope, expires_at)
                .await?;
            println!(
                "Created API key {} ({name}, scope {scope}). It is shown once; keep it now:",
                key.id
            );
            println!("{}", key.secret);
        }
        ApikeyCommand::List { db } => {
            let store = migrate(&db).await?;
            for key in store.list_api_keys().await? {
                println!("{}", serde_json::to_string(&key)?);
            }
        }
        ApikeyCommand::Revoke { id, db } => {
            let store = migrate(&db).await?;
            anyhow::ensure!(
                store.revoke_api_key(&id).await?,
                "no live API key with id {id}"
            );
            println!("Revoked {id}.");
        }
    }
    Ok(())
}
