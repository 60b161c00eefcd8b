use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    history::init_tracing();
    history::run(history::Config::parse()).await
}
