import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Your own account: sessions, password, profile, deletion, data export, audit trail and API keys.
public struct AccountModule: KilnModule {
    public let name = "account"
    public let service: AccountService
    let clock: any Clock

    /// `accounts`: the auth domain's account operations.
    public init(services: Services, accounts: any AccountOperations) {
        service = AccountService(services: services, accounts: accounts)
        clock = services.clock
        let keys = service
        services.hooks.provideAPIKeys { token, ip in try await keys.resolve(token: token, ip: ip) }
        services.hooks.onUserPurged { tx, uid in try keys.deleteAll(tx, userID: uid) }
        services.hooks.onCredentialsReset { tx, uid, at in try keys.revokeAll(tx, userID: uid, at: at) }
    }

    public var migrations: [Migration] { AccountMigrations.all }

    public func register(_ routes: Routes) {
        AccountRoutes(account: service, clock: clock).register(routes)
    }
}
