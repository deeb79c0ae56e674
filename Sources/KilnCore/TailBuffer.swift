/// Keeps the last `capacity` bytes appended (job output tails, terminal replay).
public struct TailBuffer: Sendable {
    public let capacity: Int
    private var storage: [UInt8] = []
    private var start = 0

    public init(capacity: Int) { self.capacity = capacity }

    public mutating func append(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Copies in place (a terminal appends every read it relays).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        if bytes.count >= capacity {
            storage = Array(UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - capacity)...]))
            start = 0
            return
        }
        var from = 0
        if storage.count < capacity {
            let n = min(capacity - storage.count, bytes.count)
            storage.append(contentsOf: UnsafeRawBufferPointer(start: src, count: n))
            from = n
        }
        storage.withUnsafeMutableBytes { dst in
            while from < bytes.count {
                let n = min(bytes.count - from, capacity - start)
                (dst.baseAddress! + start).copyMemory(from: src + from, byteCount: n)
                start = (start + n) % capacity
                from += n
            }
        }
    }

    /// The kept bytes, oldest first.
    public var bytes: [UInt8] {
        storage.count < capacity || start == 0 ? storage : Array(storage[start...] + storage[..<start])
    }
}
