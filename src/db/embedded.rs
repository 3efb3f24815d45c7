// TEMPORARY STUB: replaced by the real module.
pub struct EmbeddedPostgres;
impl EmbeddedPostgres {
    pub fn start(_data_dir: &std::path::Path) -> anyhow::Result<Self> { anyhow::bail!("stub") }
    pub fn url(&self, _database: &str) -> String { String::new() }
    pub fn stop(&mut self) -> anyhow::Result<()> { Ok(()) }
    pub fn keep_running(&mut self) {}
}
