//! The `group` subcommands: parsing only; they run in `crate::group`.

use clap::{Args, Subcommand, ValueEnum};

use super::{TokenArgs, parse_group_id};
use crate::users::UserRef;

/// What every `group` command takes: who acts, and the output format.
#[derive(Debug, Clone, Args)]
pub struct GroupCommon {
    #[command(flatten)]
    pub auth: TokenArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the commands about one group take: [`GroupCommon`], and the group.
#[derive(Debug, Clone, Args)]
pub struct GroupTarget {
    #[command(flatten)]
    pub common: GroupCommon,
    /// The group (7 or g:7).
    #[arg(value_parser = parse_group_id)]
    pub group: u64,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group owned by you; prints it and its members.
    Create {
        #[command(flatten)]
        common: GroupCommon,
        /// 1 to 64 bytes.
        name: String,
        /// A member besides you, by id or name (repeat the option, or separate them with commas).
        #[arg(long = "member", value_name = "USER", value_delimiter = ',', value_parser = UserRef::parse)]
        members: Vec<UserRef>,
        /// Members who join later see the messages from before they joined.
        #[arg(long)]
        history: bool,
    },
    /// Add members (owner and admins); prints the change.
    Add {
        #[command(flatten)]
        target: GroupTarget,
        /// The users to add, by id or name.
        #[arg(required = true, value_name = "USER", value_parser = UserRef::parse)]
        users: Vec<UserRef>,
    },
    /// Remove a member (owner and admins; only the owner removes an admin); prints the change.
    Remove {
        #[command(flatten)]
        target: GroupTarget,
        /// The member to remove, by id or name.
        #[arg(value_name = "USER", value_parser = UserRef::parse)]
        user: UserRef,
    },
    /// Leave a group (the owner cannot); prints the change.
    Leave {
        #[command(flatten)]
        target: GroupTarget,
    },
    /// Make a member an admin, or an admin a member (owner only); prints the change.
    Role {
        #[command(flatten)]
        target: GroupTarget,
        /// The member, by id or name.
        #[arg(value_name = "USER", value_parser = UserRef::parse)]
        user: UserRef,
        /// The new role.
        #[arg(value_enum)]
        role: GroupRole,
    },
    /// Print a group and its members (members only).
    Members {
        #[command(flatten)]
        target: GroupTarget,
    },
    /// Print your groups with your role in each.
    List {
        #[command(flatten)]
        common: GroupCommon,
    },
    /// Print how many members read a message, and who (groups up to the server's details limit).
    ReadStatus {
        #[command(flatten)]
        target: GroupTarget,
        /// The message's seq in the group (conversation g:GROUP).
        seq: u64,
    },
}

impl GroupCommand {
    pub fn common(&self) -> &GroupCommon {
        match self {
            Self::Create { common, .. } | Self::List { common } => common,
            Self::Add { target, .. }
            | Self::Remove { target, .. }
            | Self::Leave { target }
            | Self::Role { target, .. }
            | Self::Members { target }
            | Self::ReadStatus { target, .. } => &target.common,
        }
    }
}

/// A role `group role` can give (there is one owner: the creator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupRole {
    Admin,
    Member,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("imctl").chain(args.iter().copied()))
    }

    #[test]
    fn group_commands_parse() {
        let cli =
            parse(&["group", "create", "--token", "t", "team", "--member", "2,bob", "--member", "4", "--history"]);
        let Command::Group(GroupCommand::Create { common, name, members, history }) = cli.unwrap().command else {
            panic!("not group create")
        };
        assert_eq!((common.auth.token.as_str(), common.json), ("t", false));
        let bob = UserRef::Name("bob".into());
        assert_eq!((name.as_str(), members, history), ("team", vec![UserRef::Id(2), bob, UserRef::Id(4)], true));

        let cli = parse(&["group", "add", "--token", "t", "g:7", "5", "6", "--json"]).unwrap();
        assert!(
            matches!(cli.command, Command::Group(GroupCommand::Add { target: GroupTarget { group: 7, ref common }, ref users }) if users == &[UserRef::Id(5), UserRef::Id(6)] && common.json)
        );
        let cli = parse(&["group", "role", "--token", "t", "7", "carol", "admin"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Group(GroupCommand::Role {
                target: GroupTarget { group: 7, .. },
                user: UserRef::Name(ref name),
                role: GroupRole::Admin
            }) if name == "carol"
        ));
        let cli = parse(&["group", "read-status", "--token", "t", "7", "12"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Group(GroupCommand::ReadStatus { target: GroupTarget { group: 7, .. }, seq: 12 })
        ));
        assert!(parse(&["group", "list", "--token", "t"]).is_ok());
    }

    #[test]
    fn group_commands_reject_bad_input() {
        let bad: [&[&str]; 7] = [
            &["group", "add", "--token", "t", "7"],
            &["group", "role", "--token", "t", "7", "5", "owner"],
            &["group", "remove", "--token", "t", "7", "0"],
            &["group", "members", "--token", "t", "x"],
            &["group", "create", "--token", "t", "team", "--member", "0"],
            &["group", "read-status", "--token", "t", "7"],
            &["group", "leave", "7"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }
}
