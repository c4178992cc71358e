namespace InferKit.AspNetCore.Protocol;

/// <summary>A request that does not follow the Open Inference Protocol; answered with 400 and this message.</summary>
internal sealed class ProtocolException : Exception
{
    public ProtocolException(string message)
        : base(message)
    {
    }

    public ProtocolException(string message, Exception inner)
        : base(message, inner)
    {
    }

    public ProtocolException()
    {
    }
}
