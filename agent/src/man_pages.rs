//! `pdtf-agent manpages --out DIR` (hidden; the packaging runs it), part of the binary.

use anyhow::Context;

/// Every command's man page: `pdtf-agent.1`, then `pdtf-agent-CMD.1` and
/// `pdtf-agent-CMD-SUB.1` for the subcommands (hidden ones left out).
pub(crate) fn write<C: clap::CommandFactory>(out: &std::path::Path) -> anyhow::Result<usize> {
    fn walk(cmd: &clap::Command, name: String, out: &std::path::Path) -> anyhow::Result<usize> {
        let cmd = cmd.clone().display_name(name.clone());
        let path = out.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        let mut n = 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            n += walk(sub, format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(n)
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = C::command();
    cmd.build();
    walk(&cmd, "pdtf-agent".into(), out)
}
