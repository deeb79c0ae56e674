import Foundation
import KilnHTTP

/// A workspace's membership as other domains use it (implemented by the workspaces domain).
public protocol WorkspaceMembers: WorkspaceRoleResolver {
    /// Every member's user id and role.
    func memberRoles(wsID: String) async throws -> [(userID: String, role: Role)]
    /// The workspace's name (nil: no such workspace).
    func workspaceName(_ wsID: String) async throws -> String?
    /// Adds `userID` who accepted an invitation (409 when a member already); audited and published
    /// as `member.joined` on the workspace topic.
    func join(wsID: String, userID: String, role: Role, invitedBy: String, ip: String) async throws
}

/// Accounts made through a workspace invitation (implemented by the auth domain).
public protocol InvitedAccounts: Sendable {
    /// A new account for `email`, verified already (its owner opened the link mailed to it); works
    /// whatever `--registration` says, because a workspace admin invited this address.
    func registerInvited(email: String, name: String, password: String, ip: String) async throws -> User
}

extension Permission {
    /// A workspace's members, used by the workspaces domain (which registers them) and by collab's invitations.
    public static let membersRead = Permission(
        "members:read", "See a workspace's members and roles", minimumRole: .viewer)
    public static let membersWrite = Permission(
        "members:write", "Add and remove members, change roles, invite people", minimumRole: .admin)
}

extension EventBus {
    /// A workspace's own topic: domain events that belong to no run or job (members joining and
    /// leaving, rollbacks, reviews, share links), published with a scope for the activity feed.
    public static func workspaceTopic(_ wsID: String) -> String { "ws:\(wsID)" }
}
