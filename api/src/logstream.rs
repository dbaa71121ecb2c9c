//! Which output stream of a task: the `stream=stdout|stderr` of log requests and the names
//! of the agent's capture files.

/// A task's standard output or standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The command's standard output.
    #[default]
    Stdout,
    /// The command's standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`, as the API and the capture files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}
