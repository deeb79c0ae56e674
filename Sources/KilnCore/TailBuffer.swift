/// Keeps the last `capacity` bytes appended (job output tails, terminal replay).
public struct TailBuffer: Sendable {
    public let capacity: Int
    private var storage: [UInt8] = []
    private var start = 0

    public init(capacity: Int) { self.capacity = capacity }

    public mutating func append(_ bytes: ArraySlice<UInt8>) {
        if bytes.count >= capacity { storage = Array(bytes.suffix(capacity)); start = 0; return }
        var rest = bytes
        if storage.count < capacity {
            let room = capacity - storage.count
            storage += rest.prefix(room)
            rest = rest.dropFirst(room)
        }
        while !rest.isEmpty {
            let n = min(rest.count, capacity - start)
            storage.replaceSubrange(start..<(start + n), with: rest.prefix(n))
            start = (start + n) % capacity
            rest = rest.dropFirst(n)
        }
    }

    /// The kept bytes, oldest first.
    public var bytes: [UInt8] { storage.count < capacity || start == 0 ? storage : Array(storage[start...] + storage[..<start]) }
}
