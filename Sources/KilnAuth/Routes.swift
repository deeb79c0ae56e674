import KilnCore
import KilnHTTP
import KilnStore

/// Identity. This first part: the first owner account and operator-created accounts via
/// one-time setup links. Sessions, MFA, API keys and roles build on it.
public struct AuthModule: KilnModule {
    public let name = "auth"
    public init() {}
    public var migrations: [Migration] { AuthMigrations.all }

    public func register(_ routes: Routes, _ services: Services) {
        let auth = AuthService(db: services.db, clock: services.clock)
        routes.add(.POST, "/auth/setup", permission: Permission.publicAccess,
                   summary: "Redeem a one-time setup link: create the owner account, or set the password of a new account",
                   tags: ["auth"],
                   requestBody: ["type": "object", "required": ["token", "password"], "additionalProperties": false,
                                 "properties": ["token": ["type": "string"], "email": ["type": "string"], "name": ["type": "string"],
                                                "password": ["type": "string"]]],
                   successStatus: 201,
                   responseBody: ["type": "object", "properties": ["user": ["type": "object"]]],
                   bodyLimit: 16 * 1024) { req, _ in
            let input = try await req.decode(AuthService.SetupInput.self, limit: 16 * 1024)
            let user = try await auth.completeSetup(input)
            return try .json(["user": user], status: .created)
        }
    }
}
