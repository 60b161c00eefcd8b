use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wallet::init_tracing();
    wallet::run(wallet::Config::parse()).await
}
