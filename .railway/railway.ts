// Railway Infrastructure as Code (PROTOCOLS.md §5.5: Config as Code — railway.toml — is no
// longer read from 2026-12-01). `railway config plan` shows what this would change,
// `railway config apply` applies it.
//
// One service built from the repository's Dockerfile, one PostgreSQL. The service gets the
// database's private URL, answers Railway's deploy-time health check on /readyz (200 once the
// pipeline is compiled and the database migrated), and is given time to drain on each deploy:
// Railway sends SIGTERM, Caly refuses new calls, lets calls in progress run for
// CALY_DRAIN_GRACE_SECS, ends the rest politely, flushes its records and exits before Railway's
// RAILWAY_DEPLOYMENT_DRAINING_SECONDS run out and SIGKILL comes.
import { defineRailway, project, service, postgres } from "railway/iac";

export default defineRailway(() => {
  const db = postgres("postgres");
  const caly = service("caly", {
    healthcheck: "/readyz",
    healthcheckTimeout: 120,
    env: {
      DATABASE_URL: db.env.DATABASE_URL,
      // Calls in progress may finish for up to 10 minutes after a deploy begins...
      CALY_DRAIN_GRACE_SECS: "600",
      // ...and Railway waits a little longer than that before SIGKILL.
      RAILWAY_DEPLOYMENT_DRAINING_SECONDS: "640",
      CALY_LOG_FORMAT: "json",
      // Set in the dashboard, never in the repository:
      // OPENAI_API_KEY, CALY_STREAM_AUTH, CALY_WEBHOOK_TOKEN,
      // SHOPIFY_STORE_DOMAIN, SHOPIFY_ACCESS_TOKEN.
    },
  });
  return project("caly", { resources: [caly, db] });
});
